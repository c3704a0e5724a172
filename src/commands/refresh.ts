import { refreshCommand } from '../cli/commands/refresh.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(refreshCommand);
