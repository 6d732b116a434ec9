// Entry of a measurement process (forked by the bench with an IPC channel): receives one MeasureJob,
// answers with its MeasureResult or an error, and exits. One process per contender and context keeps
// their memory apart.
import { measure, type MeasureJob } from './measure';

// The bench stopped (killed, or its terminal closed): nothing is left to answer to.
process.once('disconnect', () => process.exit(1));

process.once('message', (job: MeasureJob) => {
  measure(job).then(
    (result) => process.send!({ type: 'result', result }, () => process.exit(0)),
    (e: Error) => process.send!({ type: 'error', message: String(e?.message ?? e).split('\n')[0] }, () => process.exit(1)),
  );
});
