-- Weights in steps of 0.01%: the share is kept as hundredths of a percent.
-- `weight` stays (the whole percent, rounded down) so the old column's
-- meaning and checks still hold for anything that reads it.
ALTER TABLE pools ADD COLUMN weight_hundredths BIGINT NOT NULL DEFAULT 0
    CHECK (weight_hundredths BETWEEN 0 AND 10000);
UPDATE pools SET weight_hundredths = weight * 100;
