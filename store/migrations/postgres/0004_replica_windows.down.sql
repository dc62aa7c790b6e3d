DROP TABLE replica_windows;
