-- ---------------------------------------------------------------------------------------------
-- Last, once every object exists: the privileges the matrix declares, and the record of this install
-- (every upgrade script ends the same way)
-- ---------------------------------------------------------------------------------------------

SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('@PGRELAY_VERSION@');
