// A Node `ws` client for the exit-path suite: node client.js URL MODE
// Prints "ready" once open, "text <data>" per message, "closed <code>" at the end.
// MODE: hold (stay connected until killed or closed), close:<code> (close after the first answer).
const WebSocket = require('ws');

const [url, mode = 'hold'] = process.argv.slice(2);
const say = (line) => process.stdout.write(line + '\n');
const ws = new WebSocket(url);

ws.on('open', () => {
  say('ready');
  ws.send('from node');
});
ws.on('message', (data) => {
  say('text ' + data.toString());
  if (mode.startsWith('close:')) ws.close(Number(mode.split(':')[1]), 'node says bye');
});
ws.on('close', (code) => {
  say('closed ' + code);
  process.exit(0);
});
ws.on('error', (err) => {
  say('error ' + err.message);
  process.exit(1);
});
