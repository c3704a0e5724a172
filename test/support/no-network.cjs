// Preloaded (NODE_OPTIONS=--require) into a CLI run to prove it opens no socket and loads no
// keychain module: any attempt is recorded in MXS_PROBE_FILE and fails loudly.
const fs = require('node:fs');
const net = require('node:net');
const Module = require('node:module');
const file = process.env.MXS_PROBE_FILE;
const record = (what) => fs.appendFileSync(file, what + '\n');
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  record('socket ' + JSON.stringify(args[0] && typeof args[0] === 'object' ? { host: args[0].host, port: args[0].port, path: args[0].path } : args[0]));
  return connect.apply(this, args);
};
const load = Module._load;
Module._load = function (request, ...rest) {
  if (/(^|\/)(keytar|undici)(\/|$)/.test(request)) record('load ' + request);
  return load.call(this, request, ...rest);
};
