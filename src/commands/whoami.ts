import { whoamiCommand } from '../cli/commands/whoami.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(whoamiCommand);
