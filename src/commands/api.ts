import { apiCommand } from '../cli/commands/api.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(apiCommand);
