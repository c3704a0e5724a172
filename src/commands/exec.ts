import { execCommand } from '../cli/commands/exec.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(execCommand);
