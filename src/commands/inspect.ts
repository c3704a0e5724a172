import { inspectCommand } from '../cli/commands/inspect.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(inspectCommand);
