/**
 * The worker's entry point. Stop signals are held before anything else loads: loading the
 * rest takes a second or more, and a signal then exits 0 (loading-signals.ts). run-worker.ts
 * starts the service.
 */
import { holdStopSignalsWhileLoading } from '@connect/shared/loading-signals';

holdStopSignalsWhileLoading('worker');
await import('./run-worker.ts');
