/// <reference types="vscode-webview" />
// The webview's one handle on the host: posting messages and keeping state across reloads.
export interface HostApi<Out, State> {
  post(message: Out): void;
  getState(): State | undefined;
  setState(state: State): void;
}

export function hostApi<Out, State>(): HostApi<Out, State> {
  const api = acquireVsCodeApi<State>();
  return {
    post: (m) => api.postMessage(m),
    getState: () => api.getState(),
    setState: (s) => void api.setState(s),
  };
}
