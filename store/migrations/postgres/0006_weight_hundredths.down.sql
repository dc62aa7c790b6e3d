-- Back to whole percentages: a weight with decimals is rounded down.
ALTER TABLE pools DROP COLUMN weight_hundredths;
