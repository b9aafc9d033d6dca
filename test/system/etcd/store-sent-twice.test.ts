// The store suite again, with every call sent twice and the first answer dropped: what etcd's client
// does when a member goes away after applying a write and before answering it (docs/etcd.md "Writes
// sent twice"). Every write must still report what it did, not a conflict with itself.
import { describeStore } from '../../store/store-suite.js';
import { etcdImpl } from './harness.js';

describeStore(etcdImpl({ answerLostOnce: true }));
