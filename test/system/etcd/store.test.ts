import { describeStore } from '../../store/store-suite.js';
import { etcdImpl } from './harness.js';

describeStore(etcdImpl());
