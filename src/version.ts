/** veil's version, as hosts report it in their etcd record and the API in its OpenAPI document. */
export const VERSION = '0.1.0';
