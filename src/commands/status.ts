import { statusCommand } from '../cli/commands/status.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(statusCommand);
