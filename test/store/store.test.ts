import { memoryImpl } from './harness.js';
import { describeStore } from './store-suite.js';

describeStore(memoryImpl());
