import { Args } from '@oclif/core';
import { MxsCommand } from '../../base-command.js';
import { renameDeviceService, type RenameDeviceResult } from '../../services/devices.js';
import { renamedLine } from '../../ui/devices.js';

export default class DevicesRename extends MxsCommand {
  static override summary = 'Give a device a new display name.';
  static override description = 'The name is visible to the people you talk to on Matrix (in their device lists). See the IDs with: mxs devices';
  static override examples = ['<%= config.bin %> devices rename ABCDEFGHIJ "work laptop"'];
  static override args = {
    // ignoreStdin: oclif would otherwise read a missing argument from standard input.
    id: Args.string({ description: 'The device ID.', required: true, ignoreStdin: true }),
    name: Args.string({ description: 'The new display name.', required: true, ignoreStdin: true }),
  };

  async run(): Promise<RenameDeviceResult> {
    const { args, flags } = await this.parse(DevicesRename);
    const { profile, deps } = this.setup(flags);
    const result = await renameDeviceService(profile, args.id, args.name, deps);
    this.out.info(renamedLine(result));
    return result;
  }
}
