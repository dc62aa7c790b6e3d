ALTER TABLE replica_windows DROP COLUMN totals;
