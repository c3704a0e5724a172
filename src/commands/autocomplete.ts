import { autocompleteCommand } from '../cli/commands/autocomplete.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(autocompleteCommand);
