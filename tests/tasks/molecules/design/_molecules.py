"""Molecules the design tests share."""

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
START = [
    "CCO",
    "CCN",
    "c1ccccc1",
    "CC(=O)O",
    "CCCC",
    "C1CCCCC1",
    "CNC",
    "OCCO",
    "CC(C)C",
    "c1ccncc1",
    "CC(=O)N",
    "COC",
    "CCCl",
    "C1CCOC1",
    "CC#N",
    "NCCO",
    "c1ccoc1",
    "CCS",
    "CC=O",
    "OC(=O)CC(=O)O",
]
