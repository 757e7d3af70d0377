// Drives madx-pusher's Pusher HTTP API with the official Pusher Node
// library, unmodified, as a back-end would. One call per run:
//
//   node drive.mjs '{"port": 8080, "appId": "123", "key": "k", "secret": "s",
//                    "call": "trigger", "args": ["news", "done", {"a": 1}]}'
//
// Prints one JSON line: {"status": 200, "body": ...} or, when the library
// throws, {"error": "...", "status": 401, "body": "..."}. `clockSkewSecs`
// moves this process's clock, to sign requests with a stale timestamp.
import Pusher from "pusher";

const request = JSON.parse(process.argv[2]);
if (request.clockSkewSecs) {
  const realNow = Date.now;
  Date.now = () => realNow() + request.clockSkewSecs * 1000;
}
const pusher = new Pusher({
  appId: request.appId,
  key: request.key,
  secret: request.secret,
  host: "127.0.0.1",
  port: String(request.port),
  useTLS: false,
});

try {
  const response = await pusher[request.call](...request.args);
  const text = await response.text();
  console.log(JSON.stringify({ status: response.status, body: text ? JSON.parse(text) : null }));
} catch (error) {
  console.log(JSON.stringify({ error: error.message, status: error.status ?? null, body: error.body ?? null }));
}
