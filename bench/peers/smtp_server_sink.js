// smtp_server_sink.js: nodemailer's smtp-server as an accept-and-discard
// peer for bench/run.sh. No AUTH, no reverse DNS, no logging; STARTTLS
// with the given certificate when one is named.
//
//   node smtp_server_sink.js PORT [CERT KEY]
'use strict'
const fs = require('fs')
const { SMTPServer } = require('smtp-server')

const port = Number(process.argv[2])
const opts = {
  authOptional: true,
  disabledCommands: ['AUTH'],
  disableReverseLookup: true,
  logger: false,
  size: 64 * 1024 * 1024,
  maxClients: 200000,
  onData(stream, session, callback) {
    stream.on('data', () => {})
    stream.on('end', () => callback(null, 'Ok: discarded'))
  },
}
if (process.argv[3]) {
  opts.key = fs.readFileSync(process.argv[4])
  opts.cert = fs.readFileSync(process.argv[3])
} else {
  opts.disabledCommands.push('STARTTLS')
}
const server = new SMTPServer(opts)
server.on('error', (err) => console.error('smtp-server:', err.message))
server.listen(port, '127.0.0.1')
process.on('SIGTERM', () => server.close(() => process.exit(0)))
