import { loginCommand } from '../cli/commands/login.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(loginCommand);
