import { switchCommand } from '../cli/commands/switch.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(switchCommand);
