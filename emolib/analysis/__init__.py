"""Stage 5, what the vectors say: geometry against human norms (`geometry`), its reliability and
scaling (`reliability`), the logit lens (`lens`), external validation on real text (`validate`, with the
text `readers`), and story fidelity measured from the text alone (`fidelity`)."""
