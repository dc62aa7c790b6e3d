DROP TABLE contract_fences;
