import { MemoryStore } from '../support/memory-store.ts';
import { storeConformance } from '../support/store-conformance.ts';

storeConformance('memory', async () => new MemoryStore());
