// The one place both sides agree on: every message between the extension and the engine process
// (JSON-RPC types over stdio) and between the extension and its webviews (tagged unions).
// The webview bundle imports './webview' directly: it must not pull in vscode-jsonrpc.
export * from './engine';
export * from './webview';
