import { formatDuration } from '../duration.js';
import { usageError } from '../errors.js';
import type { DeletionTiming } from '../services/devices-account-page.js';
import { type DeleteDevicesResult, type DeleteInteraction, type DeviceEntry, type DevicesReport, type RenameDeviceResult } from '../services/devices.js';
import { printable } from '../printable.js';
import { promptSecret, promptText, readStdinLine } from './input.js';
import type { Colors, Output } from './output.js';

// How `mxs devices` shows devices, and the terminal side of `devices delete` (confirmation, password,
// the account page). Prompts write to stderr, so that stdout holds only data (or --json).

/** `3d ago`: the largest whole unit; `just now` under a minute (or when the clocks disagree). */
export function ago(ms: number): string {
  if (ms < 60_000) return 'just now';
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000]] as const) {
    if (ms >= size) return `${Math.floor(ms / size)}${unit} ago`;
  }
  return 'just now';
}

/** `2030-01-01 12:00 UTC` */
function minuteUtc(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** `3d ago (2030-01-01 12:00 UTC) from 203.0.113.7`, or `never`. */
export function lastSeen(d: DeviceEntry, now: number): string {
  if (d.lastSeenAt === null) return 'never';
  const when = `${ago(now - Date.parse(d.lastSeenAt))} (${minuteUtc(d.lastSeenAt)})`;
  return d.lastSeenIp ? `${when} from ${printable(d.lastSeenIp)}` : when;
}

const nameOf = (d: DeviceEntry) => (d.displayName === null || d.displayName === '' ? '-' : printable(d.displayName));

/** Rows in aligned columns; server text escaped. */
function columns(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}

/** The device list: ID, name, last seen; the session's own device marked. */
export function deviceTable(r: DevicesReport, now: number, c: Colors): string[] {
  const { devices } = r.result;
  if (devices.length === 0) return [`No devices on the account of ${printable(r.userId)}.`];
  const rows = [['DEVICE ID', 'NAME', 'LAST SEEN'], ...devices.map((d) => [printable(d.deviceId), nameOf(d), lastSeen(d, now)])];
  return columns(rows).map((line, i) => (i > 0 && devices[i - 1]!.current ? `${line}  ${c.green('(this device)')}` : line));
}

/** Devices in a confirmation or a summary, indented. */
export function deviceList(devices: DeviceEntry[], now: number): string[] {
  return columns(devices.map((d) => [printable(d.deviceId), nameOf(d), `last seen ${lastSeen(d, now)}`])).map((l) => `  ${l}`);
}

export function deletedLine(r: DeleteDevicesResult, olderThanMs: number | undefined): string {
  if (r.deleted.length === 0) {
    return olderThanMs === undefined || r.declined ? 'Nothing was deleted.' : `No device was last seen more than ${formatDuration(olderThanMs)} ago; nothing was deleted.`;
  }
  return `Deleted ${r.deleted.length === 1 ? 'device' : `${r.deleted.length} devices`}: ${r.deleted.map((id) => printable(id)).join(', ')}.`;
}

export function renamedLine(r: RenameDeviceResult): string {
  return `Renamed device ${printable(r.deviceId)} to "${printable(r.displayName)}".`;
}

const waiting = (t: DeletionTiming) => `checking every ${formatDuration(t.pollMs)}, for up to ${formatDuration(t.waitMs)}; Ctrl-C gives up`;

export interface DeleteTerminal {
  stdin: NodeJS.ReadStream;
  stdinIsTTY: boolean;
  now: () => number;
  /** --password-stdin */
  passwordStdin: boolean;
  /** --browser: open the account page. */
  browser: boolean;
  /** Opens a page in the user's browser; whether it could. */
  open: (url: string) => Promise<boolean>;
  timing: DeletionTiming;
}

/** The terminal side of `devices delete`. */
export function terminalDeleteInteraction(out: Output, term: DeleteTerminal, signal: AbortSignal): DeleteInteraction {
  const promptOpts = { signal, cancelled: 'Cancelled at the prompt; nothing was deleted.' };
  return {
    interactive: term.stdinIsTTY,
    signal,
    async confirm(devices, userId) {
      out.info(`About to delete ${devices.length === 1 ? 'this device' : `these ${devices.length} devices`} of ${printable(userId)}:`);
      for (const line of deviceList(devices, term.now())) out.info(line);
      const answer = await promptText(`Delete ${devices.length === 1 ? 'it' : 'them'}? (y/N)`, { ...promptOpts, required: false });
      return /^y(es)?$/i.test(answer.trim());
    },
    async password(userId) {
      if (term.passwordStdin) return readStdinLine(term.stdin, 'password', '--password-stdin');
      if (!term.stdinIsTTY) {
        throw usageError('The server asks for the account password, and standard input is not a terminal, so mxs cannot prompt. Nothing was deleted.', 'Pipe the password in with --password-stdin.');
      }
      return promptSecret(`Password for ${printable(userId)}`, promptOpts);
    },
    async showAccountPage(url, devices) {
      out.info(`To delete ${devices.length === 1 ? 'the device' : `the ${devices.length} devices`}, approve the deletion on your account page:`);
      out.info(`  ${printable(url)}`);
      if (term.browser && (await term.open(url))) out.info('(opened in your browser)');
      if (!term.stdinIsTTY) out.info(`Waiting for the approval (${waiting(term.timing)})...`);
    },
    async showDeletionPages(pages) {
      out.info(
        pages.length === 1
          ? 'This server deletes devices on its account page: open this link and confirm there.'
          : 'This server deletes devices on its account page: open the link of each device and confirm there.',
      );
      const opened: boolean[] = [];
      for (const { device, url } of pages) {
        out.info(`  ${printable(device.deviceId)}: ${printable(url)}`);
        if (term.browser) opened.push(await term.open(url));
      }
      if (opened.length > 0 && opened.every(Boolean)) out.info(`(opened in your browser)`);
      out.info(`Waiting until ${pages.length === 1 ? 'it is' : 'they are'} gone (${waiting(term.timing)})...`);
    },
    async waitUntilDone() {
      await promptText('Press Enter once you have approved it there', { ...promptOpts, required: false });
    },
  };
}
