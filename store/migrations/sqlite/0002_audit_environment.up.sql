-- Which environment (DEPLOYMENT_ENV) a change was made in.
ALTER TABLE audit_log ADD COLUMN environment TEXT;
