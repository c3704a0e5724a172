import { MxsCommand } from '../../base-command.js';
import { listDevicesService, type DevicesResult } from '../../services/devices.js';
import { deviceTable } from '../../ui/devices.js';

export default class Devices extends MxsCommand {
  static override summary = "List the account's devices (sessions).";
  static override description =
    'Every device of the account: its ID, display name, and when and from which IP address it was last seen. The device of this session is marked "(this device)". See also: mxs devices delete, mxs devices rename.';
  static override examples = ['<%= config.bin %> devices', '<%= config.bin %> devices --json --profile work'];

  async run(): Promise<DevicesResult> {
    const { flags } = await this.parse(Devices);
    const { profile, deps } = this.setup(flags);
    const report = await listDevicesService(profile, deps);
    if (!this.jsonEnabled()) this.out.data(deviceTable(report, Date.now(), this.out.color).join('\n'));
    return report.result;
  }
}
