"""Reading finished studies: the paired verdict, its statistics, and which settings mattered (fANOVA)."""
