//! Registry backends (etcd, ZooKeeper, memory) arrive with the discovery work.
