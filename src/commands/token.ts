import { oclifCommand } from '../cli/oclif-command.js';
import { tokenCommand } from '../cli/token.js';

// Metadata and behaviour live in src/cli/token.ts, shared with the start-up fast path.
export default oclifCommand(tokenCommand);
