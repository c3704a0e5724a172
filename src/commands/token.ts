import { tokenCommand } from '../cli/commands/token.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(tokenCommand);
