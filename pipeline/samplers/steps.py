"""What the PC sampler's predictors and correctors share besides their registries (`names.Registry`): `NoStep`, the
"none" predictor or corrector."""


class NoStep:
    """The "none" predictor or corrector: leaves x as it is and evaluates no score (`uses_score`: the PC sampler skips
    it; x_mean = x)."""

    uses_score = False

    def update(self, x, t, generator):
        return x, x
