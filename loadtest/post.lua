-- wrk script for the closed-loop comparison in loadtest/README.md ("Honesty checks"):
--   wrk -t2 -c64 -d5s -s loadtest/post.lua http://127.0.0.1:19400/v1/chat/completions
-- It POSTs the body `berry loadtest loadtest/scenarios/wrk-parity.toml` sends (a 64-byte
-- prompt), so the two tools do the same work; a unit test in src/loadgen/client.rs keeps
-- them equal. No Authorization header: it is meant for `berry mock`, which takes none.
wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"lorem ipsum dolor sit amet lorem ipsum dolor sit amet lorem ipsu"}],"max_tokens":16,"stream":false}'
wrk.headers["Content-Type"] = "application/json"
