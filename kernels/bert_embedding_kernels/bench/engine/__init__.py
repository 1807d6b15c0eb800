"""What every ``embench`` command shares: timing, cases, references, the roofline, contenders,
peers, machine facts and noise, the verdict rule, budgets and progress (see :mod:`..bench`)."""
