"""From post files to an index on disk: parse (`corpus`), chunk (`chunking`), split sentences
(`sentences`), embed (`embedding`), and build, save and load the index (`index`)."""
