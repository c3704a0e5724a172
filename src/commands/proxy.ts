import { proxyCommand } from '../cli/commands/proxy.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(proxyCommand);
