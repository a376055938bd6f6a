"""The attack catalogue: requests an attacker sends a gateway that faces the internet, each over a raw
socket against a running gateway (``/public/*``, ``/strip/*`` with strip_prefix, ``/small/*`` with a
1,000-byte body limit) in front of a backend that records the raw bytes it receives
(tests/attacks/raw.py). Each test says what the client gets and what the backend received.

=====================  ==================================================  =============================
file                   attacks                                             answered as
=====================  ==================================================  =============================
test_paths.py          dot segments (raw, %2e, mixed), %2F and %5C, ``\\``,   nginx: normalised, 400 above
                       NUL and control characters, climbing above ``/``,   ``/``; Envoy: escaped slashes
                       strip_prefix tricks (``//strip``, ``/stri%70``)      REJECT_REQUEST
test_head.py           two Host headers, none, invalid ones; obs-fold,     nginx and RFC 9112: 400;
                       bad names and values, bare CR/LF; absolute-form     414 and 431 (RFC 6585) as
                       for another host, CONNECT, ``OPTIONS *``, HTTP/2.0  Envoy; 505
                       in text; oversized fields, heads, targets, 1,000
                       fields, a 2 MB header sent slowly
test_smuggling.py      CL.TE, TE.CL, TE.TE obfuscations, malformed chunks,  400, or 501 for a coding other
                       a request inside a body, h2c upgrades with and       than chunked (nginx)
                       without a body
test_time.py           slowloris heads (1,000 of them), stalled bodies,     nginx: 408 and close;
                       idle keep-alive, connections over the limit          Envoy: 503 over the limit
test_bodies.py         Expect: 100-continue, bodies declared or chunked     nginx: 413 without reading
                       over the limit                                       the declared body
test_forwarding.py     Connection naming X-Forwarded-*, X-Request-ID,       hop-by-hop headers dropped,
                       X-API-Key or the framing headers; CRLF raw or        the gateway's own set after;
                       encoded in values that are forwarded                 CRLF: 400 or stays encoded
=====================  ==================================================  =============================
"""
