"""Study: the questions' computations, attention-head analysis, figures and headless notebook runs."""
