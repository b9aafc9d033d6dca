import { describeEndpointsApi } from '../../api/endpoints-suite.js';
import { etcdImpl } from './harness.js';

describeEndpointsApi(etcdImpl());
