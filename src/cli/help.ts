import { Help } from '@oclif/core';
import { reportUnknownCommand } from '../hooks/command-not-found.js';

/**
 * oclif's help, with `mxs help foo` and `mxs foo --help` reported as every unknown command is (mxs's
 * error style, the nearest command), not as oclif's own ` ›   Error:` line.
 */
export default class MxsHelp extends Help {
  override async showHelp(argv: string[]): Promise<void> {
    try {
      await super.showHelp(argv);
    } catch (err) {
      const unknown = /^Command (.+) not found\.$/.exec((err as Error).message);
      if (!unknown) throw err;
      reportUnknownCommand(unknown[1]!, argv, this.config);
    }
  }
}
