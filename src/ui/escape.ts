// The ui layer's name for the one escaper (src/printable.ts), which the layers below the ui use too.
export { printable } from '../printable.js';
