// The webview bundle's entry: one bundle for both views; the host's HTML names the view to start.
import { startAlign } from './align';
import { startChat } from './chat';
import { startTitanize } from './titanize';
import { hostApi } from './vscode-api';

const root = document.getElementById('app')!;
const view = document.body.dataset.view;
if (view === 'chat') startChat(root, hostApi());
else if (view === 'titanize') startTitanize(root, hostApi());
else if (view === 'align') startAlign(root, hostApi());
else root.textContent = `Unknown view ${view ?? '(none)'}`;
