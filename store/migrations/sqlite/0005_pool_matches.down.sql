DROP TABLE pool_matches;
