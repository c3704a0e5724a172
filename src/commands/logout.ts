import { logoutCommand } from '../cli/commands/logout.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(logoutCommand);
