import { devicesDeleteCommand } from '../../cli/commands/devices.js';
import { oclifCommand } from '../../cli/oclif-command.js';

export default oclifCommand(devicesDeleteCommand);
