import { oclifCommand } from '../cli/oclif-command.js';
import { statusCommand } from '../cli/status.js';

// Metadata and behaviour live in src/cli/status.ts, shared with the start-up fast path.
export default oclifCommand(statusCommand);
