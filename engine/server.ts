// The engine process the VS Code extension runs: JSON-RPC over stdio (vscode-jsonrpc), messages as
// declared in protocol/engine.ts, handlers in server/engine-server.ts. stdout carries only JSON-RPC
// frames; logs go to stderr. The process ends when its parent closes the pipe.
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import { EngineServer } from './server/engine-server';
import { errorText, log } from './server/log';
import { takeStdout } from './server/stdout-guard';

function main(): void {
  const out = takeStdout();
  const connection = createMessageConnection(new StreamMessageReader(process.stdin), new StreamMessageWriter(out), {
    error: (m) => log.error(m),
    warn: (m) => log.warn(m),
    info: (m) => log.info(m),
    log: (m) => log.debug(m),
  });
  connection.onError(([error]) => log.error(`connection: ${errorText(error)}`));
  connection.onClose(() => {
    log.info('connection closed; exiting');
    process.exit(0);
  });
  process.on('unhandledRejection', (e) => log.error(`unhandled rejection: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`));
  process.on('uncaughtException', (e) => {
    log.error(`uncaught exception: ${e.stack ?? e.message}`);
    process.exit(1);
  });
  new EngineServer(connection).listen();
  log.info(`engine ${process.pid} ready (node ${process.version})`);
}

main();
