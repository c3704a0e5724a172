import { admin } from '../../../cli/commands/admin.js';
import { oclifCommand } from '../../../cli/oclif-command.js';

export default oclifCommand(admin.tokenRegenerate);
