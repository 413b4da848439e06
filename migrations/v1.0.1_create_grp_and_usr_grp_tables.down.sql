-- Undo v1.0.1: drop the membership table, then the group master.

DROP TABLE cvs_usr_grp;
DROP TABLE cvs_grp_mast;
