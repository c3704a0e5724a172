import { doctorCommand } from '../cli/commands/doctor.js';
import { oclifCommand } from '../cli/oclif-command.js';

export default oclifCommand(doctorCommand);
