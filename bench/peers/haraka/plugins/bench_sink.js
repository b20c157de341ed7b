// bench_sink: Haraka as an accept-and-discard peer for bench/run.sh.
// No reverse DNS lookup (answered here), every recipient accepted, every
// message "queued" by dropping it.
'use strict'

exports.hook_lookup_rdns = function (next) {
    next(OK, 'localhost')
}

exports.hook_rcpt = function (next) {
    next(OK)
}

exports.hook_queue = function (next) {
    next(OK, 'Ok: discarded')
}
